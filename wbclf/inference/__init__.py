"""Using a trained run: the loaded model (:mod:`.model`), ``wbclf predict``
(:mod:`.predict`) and ``wbclf export`` (:mod:`.export`)."""
