"""The offline demo corpus: synthesised speech and drawn objects for the study's concepts."""
