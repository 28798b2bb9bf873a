"""How each strategy turns data and a model into epochs.

- :mod:`.base`: ``TrainingPlan``, the interface the run loop calls.
- :mod:`.image`: training on (augmented) pixels: scratch, fine-tune, frozen without the cache.
- :mod:`.features`: frozen backbone run once into a feature store; epochs train the head.
- :mod:`.factory`: ``build_plan``, the model and the plan for a RunConfig.
"""
