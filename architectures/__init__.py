"""Model families: one file each; every builder is registered with `@ARCHITECTURES.register`."""
