"""Fine-tuning (``geoml:finetune``): the job (``job``), training data (``trainset``), the training
loop (``trainer``), backbones and pretrained weights (``backbones``, ``pretrained``, ``weights``,
``weights_catalog``, ``download``, ``weights_cli``), metrics and the HTML report."""
