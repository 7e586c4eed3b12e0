"""Everything that depends on the installed transformers release, in one place.

(Being filled by the lead for issue 19: the torchvision-free processor loader
moves here.)
"""
