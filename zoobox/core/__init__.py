"""The leaves every other layer uses: paths, errors, recipes, fingerprints, the artifact store."""
