# Elasticsearch as Dispo runs it: the server-core distribution (integ-test-zip) from Maven Central,
# the same artifact the test suite starts, so production has exactly the tested feature subset
# (no analysis-common, painless, reindex or parent-join).
FROM maven:3.9-eclipse-temurin-17 AS fetch
ARG ES_VERSION=8.19.8
RUN mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
      -Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip \
      -DoutputDirectory=/dist \
 && cd /dist && jar xf elasticsearch-${ES_VERSION}.zip && mv elasticsearch-${ES_VERSION} /elasticsearch

FROM eclipse-temurin:17-jre
COPY --from=fetch /elasticsearch /usr/share/elasticsearch
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /usr/share/elasticsearch elasticsearch \
 && mkdir -p /data /logs && chown -R elasticsearch /usr/share/elasticsearch /data /logs \
 && chmod +x /usr/share/elasticsearch/bin/*
USER elasticsearch
ENV ES_JAVA_HOME=/opt/java/openjdk ES_JAVA_OPTS="-Xms1g -Xmx1g"
EXPOSE 9200
CMD ["/usr/share/elasticsearch/bin/elasticsearch", \
     "-E", "discovery.type=single-node", "-E", "xpack.security.enabled=false", \
     "-E", "network.host=0.0.0.0", "-E", "http.port=9200", \
     "-E", "path.data=/data", "-E", "path.logs=/logs"]
