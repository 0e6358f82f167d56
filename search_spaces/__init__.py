"""Search spaces: one file each; every space is registered with `@SEARCH_SPACES.register`."""
