from shared.migrations import run_env
from ultrai_auth.models import AuthBase

run_env(AuthBase.metadata)
