"""The feature stores: the only contract between stage one and the later stages."""
