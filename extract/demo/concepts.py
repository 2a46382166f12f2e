"""The demo corpus's tables: concepts with their words, the artwork sets and the voices.

Everything the builder draws from is named here, in one place, so that a reader can check the
words, the substitutions and the licences without reading the synthesis or drawing code.
Words follow ../shared/spec.md, fixed where the pictures show something else (see `note`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoConcept:
    """One concept of the demo: its words per language, the emoji it is drawn from, and why it differs."""

    name: str
    kind: str  # "familiar" | "novel"
    words: dict[str, str]
    emoji: str  # the Unicode code point(s) drawn, e.g. "U+1F415"
    icon: str  # the Iconify icon name in most sets
    icon_overrides: dict[str, str] = field(default_factory=dict)  # set key -> icon name where it differs
    only_sets: tuple[str, ...] = ()  # when not empty, draw the concept from these sets only
    skip_sets: tuple[str, ...] = ()  # sets whose drawing does not show the concept
    note: str = ""  # substitutions and word fixes, copied into concepts.csv and the README

    def icon_name(self, set_key: str) -> str:
        return self.icon_overrides.get(set_key, self.icon)


def _c(name, kind, en, fr, nl, emoji, icon, note="", **kw) -> DemoConcept:
    return DemoConcept(name, kind, {"en": en, "fr": fr, "nl": nl}, emoji, icon, note=note, **kw)


FAMILIAR = "familiar"
NOVEL = "novel"

# Guns that are drawn as guns (the other sets now draw U+1F52B as a water pistol).
REAL_GUN_SETS = ("noto-v1", "openmoji", "emojione", "emojione-v1", "emojione-monotone", "fxemoji",
                 "streamline-emojis")

CONCEPTS: tuple[DemoConcept, ...] = (
    _c("dog", FAMILIAR, "dog", "chien", "hond", "U+1F415", "dog"),
    _c("boat", FAMILIAR, "boat", "bateau", "boot", "U+26F5", "sailboat",
       skip_sets=("fxemoji",), note="a sailboat; fxemoji left out (an opaque square tile with sky and sea)"),
    _c("cow", FAMILIAR, "cow", "vache", "koe", "U+1F404", "cow"),
    _c("bear", FAMILIAR, "bear", "ours", "beer", "U+1F43B", "bear",
       icon_overrides={"streamline-emojis": "bear-face"}, note="a bear's face in every set"),
    _c("horse", FAMILIAR, "horse", "cheval", "paard", "U+1F40E", "horse"),
    _c("scissors", FAMILIAR, "scissors", "ciseaux", "schaar", "U+2702", "scissors",
       icon_overrides={"fxemoji": "blackscissors"}),
    _c("umbrella", FAMILIAR, "umbrella", "parapluie", "paraplu", "U+2602", "umbrella",
       icon_overrides={"emojione-v1": "closed-umbrella"}),
    _c("car", FAMILIAR, "car", "voiture", "auto", "U+1F697", "automobile"),
    _c("bird", FAMILIAR, "bird", "oiseau", "vogel", "U+1F426", "bird",
       icon_overrides={"streamline-emojis": "bird-1"}),
    _c("clock", FAMILIAR, "clock", "horloge", "klok", "U+1F570", "mantelpiece-clock",
       icon_overrides={"fxemoji": "alarmclock"}, note="a mantelpiece clock (fxemoji: an alarm clock)"),
    _c("elephant", FAMILIAR, "elephant", "éléphant", "olifant", "U+1F418", "elephant"),
    _c("cat", FAMILIAR, "cat", "chat", "kat", "U+1F408", "cat"),
    _c("sheep", FAMILIAR, "sheep", "mouton", "schaap", "U+1F411", "ewe",
       icon_overrides={"fxemoji": "sheep", "streamline-emojis": "ewe-1"}),
    _c("ball", NOVEL, "ball", "ballon", "bal", "U+26BD", "soccer-ball",
       icon_overrides={"fxemoji": "soccerball", "streamline-emojis": "basketball"},
       note="a football (streamline: a basketball)"),
    _c("cake", NOVEL, "cake", "gâteau", "taart", "U+1F382", "birthday-cake",
       icon_overrides={"fxemoji": "birthdaycake", "streamline-emojis": "birthday-cake-1"}),
    _c("trumpet", NOVEL, "trumpet", "trompette", "trompet", "U+1F3BA", "trumpet"),
    _c("lamp", NOVEL, "lamp", "lampe", "lamp", "U+1FA94", "diya-lamp",
       note="an oil lamp (diya): the only lamp drawn in the sets"),
    _c("bed", NOVEL, "bed", "lit", "bed", "U+1F6CF", "bed",
       note="substitutes bench (banc/bank): no set draws a bench; the couch emoji also shows a lamp"),
    _c("rocket", NOVEL, "rocket", "fusée", "raket", "U+1F680", "rocket",
       note="substitutes cannon (canon/kanon): no set draws a cannon"),
    _c("piano", NOVEL, "piano", "piano", "piano", "U+1F3B9", "musical-keyboard",
       icon_overrides={"fxemoji": "musicalkeyboard"}, note="a musical keyboard (keys only)"),
    _c("barrel", NOVEL, "barrel", "baril", "ton", "U+1F6E2", "oil-drum",
       note="an oil drum: fr baril instead of tonneau (a wooden cask)"),
    _c("camera", NOVEL, "camera", "appareil photo", "camera", "U+1F4F7", "camera"),
    _c("fan", NOVEL, "fan", "éventail", "waaier", "U+1FAAD", "folding-hand-fan",
       note="a folding hand fan: fr éventail / nl waaier instead of ventilateur / ventilator (an electric fan)"),
    _c("revolver", NOVEL, "revolver", "revolver", "revolver", "U+1F52B", "pistol", only_sets=REAL_GUN_SETS,
       note="only the sets that draw a real gun (the others draw a water pistol)"),
    _c("buck", NOVEL, "buck", "cerf", "hert", "U+1F98C", "deer", note="a deer with antlers"),
    _c("toilet", NOVEL, "toilet", "toilettes", "wc", "U+1F6BD", "toilet"),
    _c("butterfly", NOVEL, "butterfly", "papillon", "vlinder", "U+1F98B", "butterfly"),
    _c("cup", NOVEL, "cup", "tasse", "kopje", "U+2615", "hot-beverage",
       icon_overrides={"fxemoji": "hotbeverage", "streamline-emojis": "hot-beverage-1"}, note="a hot drink in a cup"),
    _c("guitar", NOVEL, "guitar", "guitare", "gitaar", "U+1F3B8", "guitar"),
    _c("fork", NOVEL, "fork", "fourchette", "vork", "U+1F374", "fork-and-knife",
       icon_overrides={"fxemoji": "forkandknife"}, note="a fork and a knife: no set draws a fork alone"),
    _c("bus", NOVEL, "bus", "bus", "bus", "U+1F68C", "bus"),
    _c("chair", NOVEL, "chair", "chaise", "stoel", "U+1FA91", "chair"),
)

LANGUAGES = ("en", "fr", "nl")


@dataclass(frozen=True)
class ArtworkSet:
    """One npm `@iconify-json` emoji set: a drawing style (the corpus's image `source`) and its terms."""

    key: str  # the corpus `source` value and the npm package suffix
    title: str
    artist: str  # sets by one artist count as one artist when counting artists per concept
    licence: str  # SPDX id
    licence_url: str
    homepage: str
    copyright: str

    @property
    def package(self) -> str:
        return f"@iconify-json/{self.key}"


_APACHE = "https://www.apache.org/licenses/LICENSE-2.0"
_MIT_FLUENT = "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE"
_CC_BY = "https://creativecommons.org/licenses/by/4.0/"
_CC_BY_SA = "https://creativecommons.org/licenses/by-sa/4.0/"

ARTWORK_SETS: tuple[ArtworkSet, ...] = (
    ArtworkSet("noto", "Noto Emoji", "Google", "Apache-2.0", _APACHE,
               "https://github.com/googlefonts/noto-emoji", "Copyright Google Inc."),
    ArtworkSet("noto-v1", "Noto Emoji (2015-2017 designs)", "Google", "Apache-2.0", _APACHE,
               "https://github.com/googlefonts/noto-emoji", "Copyright Google Inc."),
    ArtworkSet("twemoji", "Twemoji", "Twitter", "CC-BY-4.0", _CC_BY,
               "https://github.com/jdecked/twemoji", "Copyright Twitter, Inc. and other contributors"),
    ArtworkSet("openmoji", "OpenMoji", "OpenMoji", "CC-BY-SA-4.0", _CC_BY_SA,
               "https://openmoji.org", "All emojis designed by OpenMoji - the open-source emoji and icon project"),
    ArtworkSet("fluent-emoji", "Fluent Emoji (colour)", "Microsoft", "MIT", _MIT_FLUENT,
               "https://github.com/microsoft/fluentui-emoji", "Copyright (c) Microsoft Corporation"),
    ArtworkSet("fluent-emoji-flat", "Fluent Emoji (flat)", "Microsoft", "MIT", _MIT_FLUENT,
               "https://github.com/microsoft/fluentui-emoji", "Copyright (c) Microsoft Corporation"),
    ArtworkSet("fluent-emoji-high-contrast", "Fluent Emoji (high contrast)", "Microsoft", "MIT", _MIT_FLUENT,
               "https://github.com/microsoft/fluentui-emoji", "Copyright (c) Microsoft Corporation"),
    ArtworkSet("emojione", "EmojiOne 2", "EmojiOne", "CC-BY-4.0", _CC_BY,
               "https://github.com/EmojiTwo/emojitwo", "Emoji artwork provided by EmojiOne"),
    ArtworkSet("emojione-v1", "EmojiOne 1", "EmojiOne", "CC-BY-SA-4.0", _CC_BY_SA,
               "https://github.com/joypixels/emojione-legacy", "Emoji artwork provided by EmojiOne"),
    ArtworkSet("emojione-monotone", "EmojiOne 2 (monotone)", "EmojiOne", "CC-BY-4.0", _CC_BY,
               "https://github.com/EmojiTwo/emojitwo", "Emoji artwork provided by EmojiOne"),
    ArtworkSet("fxemoji", "Firefox OS Emoji", "Mozilla", "Apache-2.0", _APACHE,
               "https://github.com/mozilla/fxemoji", "Copyright Mozilla Foundation"),
    ArtworkSet("streamline-emojis", "Streamline Emojis", "Streamline", "CC-BY-4.0", _CC_BY,
               "https://github.com/webalys-hq/streamline-vectors", "Streamline Emojis by webalys (streamlinehq.com)"),
)
ARTWORK_BY_KEY = {s.key: s for s in ARTWORK_SETS}


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker. `speaker` is the corpus's speaker id; `engine` picks the synthesiser."""

    speaker: str  # corpus speaker id, unique within a language
    lang: str
    engine: str  # "mbrola" | "piper" | "espeak-ng"
    espeak_voice: str  # the espeak-ng -v argument (mbrola voices: mb-xx1); unused for piper
    gender: str  # "F" | "M" as the voice's documentation says
    recorded: bool  # a recorded speaker (diphones / neural) rather than rule-based formant synthesis
    description: str

    @property
    def mbrola_id(self) -> str:
        return self.espeak_voice.removeprefix("mb-") if self.engine == "mbrola" else ""


def _mb(lang: str, vid: str, gender: str, description: str) -> Voice:
    return Voice(f"mbrola-{vid}", lang, "mbrola", f"mb-{vid}", gender, True, description)


# Recorded-speaker voices first; rule-based espeak-ng variants only fill Dutch up to four voices.
# mbrola nl1 is left out: Debian's package synthesises silence.
VOICES: tuple[Voice, ...] = (
    _mb("en", "us1", "F", "MBROLA us1, American English female (BaBel Technology)"),
    _mb("en", "us2", "M", "MBROLA us2, American English male"),
    _mb("en", "us3", "M", "MBROLA us3, American English male"),
    _mb("en", "en1", "M", "MBROLA en1, British English male (Edinburgh 'Roger')"),
    Voice("piper-joe", "en", "piper", "", "M", True, "Piper en_US-joe-medium, neural (VITS), American English male"),
    _mb("fr", "fr1", "M", "MBROLA fr1, French male"),
    _mb("fr", "fr2", "F", "MBROLA fr2, French female"),
    _mb("fr", "fr3", "M", "MBROLA fr3, French male"),
    _mb("fr", "fr4", "F", "MBROLA fr4, French female"),
    _mb("fr", "fr5", "M", "MBROLA fr5, Belgian French male"),
    _mb("fr", "fr6", "M", "MBROLA fr6, French male"),
    _mb("fr", "fr7", "M", "MBROLA fr7, Belgian French male"),
    _mb("nl", "nl2", "M", "MBROLA nl2, Dutch male"),
    _mb("nl", "nl3", "F", "MBROLA nl3, Dutch female"),
    Voice("espeak-nl+m3", "nl", "espeak-ng", "nl+m3", "M", False, "espeak-ng Dutch, formant synthesis, variant m3"),
    Voice("espeak-nl+f2", "nl", "espeak-ng", "nl+f2", "F", False, "espeak-ng Dutch, formant synthesis, variant f2"),
)


def voices_for(lang: str) -> tuple[Voice, ...]:
    return tuple(v for v in VOICES if v.lang == lang)
