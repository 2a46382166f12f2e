"""Stage two: train the two transformer pooling heads and the temperature from the cache."""
