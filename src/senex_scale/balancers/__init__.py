"""Load balancers in front of a web pool: nginx (rendered upstream + reload, rolled back when
``nginx -t`` or the reload fails) and HAProxy (runtime API + persisted config).

A balancer is built per pool (``build_balancer``). Members are named by instance number; a
drained member stays listed (``down`` in nginx so ``ip_hash`` does not remap the other
clients, ``drain`` in HAProxy) until it is removed.
"""

from senex_scale.balancers.base import Balancer, Member, MemberState, build_balancer

__all__ = ["Balancer", "Member", "MemberState", "build_balancer"]
