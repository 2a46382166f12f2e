"""Stage one: read a corpus, run frozen encoders over it once, write feature stores."""
