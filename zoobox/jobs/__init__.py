"""What the tasks do: run a recipe and print its summary, the demo, CI over every recipe."""
