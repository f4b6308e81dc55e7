"""``torchvision.models``: the zoo of ``tinydense.models`` under torchvision's module name
(``densenet121``, ``resnet18``, ``vgg16_bn``, ...; no pretrained weights are downloaded:
load a ``.pth`` file with ``tinydense.load`` and ``model.load_state_dict``)."""
from ..models import *  # noqa: F401,F403  (the same names, one definition)
from ..models import __all__  # noqa: F401
