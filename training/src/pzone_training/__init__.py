"""P-ZONE training: the tilt classifier, its data loading and augmentation, the train and evaluate stages."""
