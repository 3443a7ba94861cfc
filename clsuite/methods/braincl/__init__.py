"""BrainCL: semi-parametric memory consolidation (pattern separation / completion networks,
entropy-coded cues, wake–sleep training). See :mod:`clsuite.methods.braincl.method`."""
