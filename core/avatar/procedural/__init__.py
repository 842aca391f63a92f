"""The procedural avatar engine: attributes -> a signed distance field with colours and parts."""
