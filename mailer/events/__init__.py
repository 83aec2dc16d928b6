"""Provider feedback: verifying and parsing delivery events sent back to us."""
