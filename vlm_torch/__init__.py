"""tf-fracture's vision-language track in PyTorch: LoRA fine-tuning of MedGemma and LLaVA-Rad.

Answers "A: No injury / B: Fracture or dislocation" for each radiograph and scores the answers with
the CNN side's metrics (``tf_fracture.metrics``, NumPy only). This package never imports TensorFlow,
and the CNN side never imports torch. Install with ``pip install "tf-fracture[vlm]"``.

    python -m vlm_torch.train --model medgemma --model-path PATH --data SPLITS_DIR --run-dir RUN
    python -m vlm_torch.evaluate RUN --data SPLITS_DIR --split test

Importing ``vlm_torch`` itself imports nothing heavy; torch and transformers load with the modules
that need them.
"""
