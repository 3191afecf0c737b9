"""Decoding of request bodies into typed values, with every limit checked before heavy work."""
