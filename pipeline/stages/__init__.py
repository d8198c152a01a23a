"""One module per pipeline stage / CLI command; stages talk to each other only through files."""
