"""Stage three: familiar and ME tests, Table 1, comparisons, variance, embeddings, translation, report."""
