"""Model families (pure PyTorch: nothing here imports Ray, DeepSpeed or MLflow).

Importing a family module registers its presets with `create_model`.
"""

from sensorlm.models.registry import build_from_config, create_model, get_preset, list_models, model_config

# Family modules (each registers its presets on import):
from sensorlm.models import hvt, projection_cl  # noqa: E402,F401
from sensorlm.models import sst  # noqa: E402,F401
from sensorlm.models import sensor_encoder as _sensor_encoder  # noqa: E402,F401
from sensorlm.models import text_encoder as _text_encoder  # noqa: E402,F401
from sensorlm.models import sensorlm as _sensorlm  # noqa: E402,F401
from sensorlm.models import coca as _coca  # noqa: E402,F401
