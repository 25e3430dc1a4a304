"""Mechanism tools of the study's later version: layer-wise representations (CKA, PCA of the
merged − SFT shift, linear probes) and interventions with random controls (subspace
suppression in the residual stream, a rank-1 shift of the final state along a direction)."""
