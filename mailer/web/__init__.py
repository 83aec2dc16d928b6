"""The web app: reader-facing links now, editor and operator pages later."""
