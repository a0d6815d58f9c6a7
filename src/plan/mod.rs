//! Pure planners: Topology + observed facts -> Plan (a list of steps, each with a guard the
//! executor re-checks). No I/O here.
