"""Fitting the learned detectors: from public data (`llmwatch train toxicity|injection|grounding
--data DIR`) and from the review queue (`llmwatch train --from-reviews`). Needs scikit-learn (the
`detectors` extra); the worker only loads what these write."""
