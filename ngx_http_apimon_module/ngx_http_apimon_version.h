/*
 * The one version of the tree: the module's, the billing agent's
 * (billing-agent --version) and the Debian packages' (debian/changelog
 * must carry it; make deb checks).
 */

#ifndef NGX_HTTP_APIMON_VERSION_H
#define NGX_HTTP_APIMON_VERSION_H

#define APIMON_VERSION  "0.9.0"

#endif
