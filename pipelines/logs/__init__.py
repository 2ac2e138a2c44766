"""The documented log schema: reading the four tables and counting what cannot be used."""
