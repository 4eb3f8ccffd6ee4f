"""Running a recipe: the automatic choice of runner and backend, settings -> engine, the engine."""
