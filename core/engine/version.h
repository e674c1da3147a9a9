/* version.h - the one version of recd: `recd --version`, sys.info and
 * sys.hello's "version", and the Lua module's recd.version. */
#ifndef REC_VERSION_H
#define REC_VERSION_H

#define REC_VERSION "0.2.0"

#endif
