"""The observation queue on the device (SQLite) and the policies around it."""
