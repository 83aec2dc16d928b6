"""The audience: subscribers, lists, segments, suppressions, tokens, import."""
