"""Sample-quality metrics. `toy`: mode coverage on Gaussian mixtures."""
