"""Publishing a model: its files hashed into chunks, its manifest and its torrent built (the
origin's ``shoal publish``, and an agent that fetched a model from upstream itself)."""
