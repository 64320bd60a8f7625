"""The name of the device axis the train step is mapped over.

Kept in its own module, below everything else, so that the models (whose
cross-device BatchNorm names it) and the step both import it, and neither
imports the other.
"""
AXIS = 'batch'
