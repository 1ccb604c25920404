"""Table declarations and the pure logic on their values."""
