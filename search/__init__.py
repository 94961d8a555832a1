"""DynTune's search side: Hydra config -> validated spec -> Ray Tune -> trainable -> results -> export.

Nothing here is imported by ``dyncomponents``: the components are plain MMDetection plugins.
"""
