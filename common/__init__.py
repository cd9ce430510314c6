"""What every layer may use (no torch, no sockets): fault injection for the tests."""
