"""Privacy protection of the release view: generalization, suppression, synthesis, and the release gate."""
