/* kago spec [--bundle DIR]: writes a default OCI config.json, as runc spec does (docs/oci.md). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "oci.h"

CLI_VERB(spec)
{
    const char *bundle = ".";
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--bundle") || !strcmp(argv[i], "-b")) && i + 1 < argc)
            bundle = argv[++i];
        else if (!strncmp(argv[i], "--bundle=", 9))
            bundle = argv[i] + 9;
        else
            return cli_usage("spec", "unknown argument %s (kago spec [--bundle DIR])", argv[i]);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", bundle);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return cli_errorf("%s: %s%s", path, strerror(errno), errno == EEXIST ? " (remove it first)" : "");
    char *text = kago_oci_default_config();
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
    free(text);
    if (close(fd) < 0 || !ok) {
        unlink(path);
        return cli_errorf("%s: %s", path, strerror(errno));
    }
    return 0;
}
