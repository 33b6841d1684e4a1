"""Every module here exposing `router: APIRouter` is included by `kvmmanager.api.app`."""
