"""The data audit: embeddings, and what they find (duplicates, label issues, outliers)."""
