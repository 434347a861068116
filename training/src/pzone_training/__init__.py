"""P-ZONE training: the tilt classifier, its data loading and augmentation, the train, evaluate and package stages.

The classes and their label ids are ``pzone.tilt.TILT_CLASSES``; importing this package stays cheap (no torch).
"""
