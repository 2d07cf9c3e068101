"""Bundled example targets: ``prefork serve prefork.examples.echo:UpperEchoHandler``."""
