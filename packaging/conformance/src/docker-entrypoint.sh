#!/bin/sh
# The nginx image's /docker-entrypoint.sh, shortened for ucri's offline
# conformance images (packaging/conformance/images.sh): when the command is
# nginx, it runs the executable *.sh files of /docker-entrypoint.d (there are
# none in the image), then it execs the command.
set -e

if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    scripts=$(find /docker-entrypoint.d/ -mindepth 1 -maxdepth 1 -type f -name '*.sh' 2>/dev/null | sort)
    if [ -n "$scripts" ]; then
        echo "$0: /docker-entrypoint.d/ is not empty, will attempt to perform configuration"
        for f in $scripts; do
            if [ -x "$f" ]; then
                echo "$0: Launching $f"
                "$f"
            else
                echo "$0: Ignoring $f, not executable"
            fi
        done
        echo "$0: Configuration complete; ready for start up"
    else
        echo "$0: No files found in /docker-entrypoint.d/, skipping configuration"
    fi
fi

exec "$@"
