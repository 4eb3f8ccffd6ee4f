"""A toy recipe whose stages are tiny, for testing the engine without torch."""
