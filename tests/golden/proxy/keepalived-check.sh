#!/bin/sh
# Written by repltool: keepalived moves the VIP away when this fails (HAProxy on this
# proxy does not accept connections on the writer port). It never touches a database.
exec timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/3306' 2>/dev/null
