"""Model front-ends of the engine (spectrum, attribution, token spectra, similarity, convergence) and model
transforms (the injection ablation)."""
