"""Channel adapters: one module per channel, registered by name (see channels/base.py).

The import list below is the registry's only source: a new channel is one adapter module
here, its templates under templates/<channel>/, its simulator under ops/simulators/, and
its tests under tests/channels/.
"""

from channels import (  # noqa: F401 - importing registers each adapter
    app_push,
    cap_feed,
    cell_broadcast,
    display_screen,
    email,
    loudspeaker,
    radio,
    sms,
    tv,
    voice,
    webhook,
    wechat,
    weibo,
)
