"""The study's single HTML report."""
