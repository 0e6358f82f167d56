"""What a terminal shows: the consoles, tables that fit, live progress."""
