"""Generative models (``geoml:traingan``, ``geoml:generate`` and the interactive map tool):
training data and loops (``data``, ``trainers``, ``train``), metrics and report, tile generation
(``generate``), the seamless latent field and the map tool's tile session."""
