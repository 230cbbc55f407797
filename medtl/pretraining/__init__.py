"""Self-supervised pretraining on a site's unlabelled scans (`medtl pretrain`): a `pretrained` artifact that training
uses as a weight source. Sits beside training (it reuses its data, augmentation and sealing) and below evaluation."""
