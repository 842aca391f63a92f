"""The attribute vocabulary, palettes, prompt parsing and the merge of all attribute sources."""
